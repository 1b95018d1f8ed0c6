#!/usr/bin/env node
// RFC 8628 device flow against a Cero server, driven by the real better-auth client.
//
// Usage: node device_flow.mjs <baseURL> <client_id>
//   baseURL    server root, e.g. http://127.0.0.1:8080 (the client appends /api/auth)
//   client_id  device client id sent to /api/auth/device/code
// Env:
//   CERO_POLL_SCALE    multiply every wait by this factor (default 1; e.g. 0.1 in tests)
//   CERO_DEVICE_SCOPE  scope to request (default: none sent)
//   CERO_FLOW_TIMEOUT  give up after this many seconds (default: the code's expires_in)
//
// Writes one JSON object per line on stdout:
//   {"event":"code", user_code, verification_uri, verification_uri_complete, interval, expires_in}
//   {"event":"pending"} | {"event":"slow_down", interval}   (one per poll answered that way)
//   {"event":"token", access_token, token_type, expires_in, scope, whoami_status, whoami, session}
//   {"event":"error", stage, error, error_description, status}   -> exit code 1
import { createAuthClient } from "better-auth/client";
import { deviceAuthorizationClient } from "better-auth/client/plugins";

const GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code";

function emit(obj) {
	// stdout to a pipe is synchronous on Linux; one line per event.
	process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function fail(stage, err) {
	const e = err ?? {};
	emit({
		event: "error",
		stage,
		error: e.error ?? e.code ?? (e instanceof Error ? e.name : "error"),
		error_description: e.error_description ?? e.message ?? String(err),
		status: e.status ?? null,
	});
	process.exitCode = 1;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
	const [baseArg, clientId] = process.argv.slice(2);
	if (!baseArg || !clientId) {
		process.stderr.write("usage: node device_flow.mjs <baseURL> <client_id>\n");
		process.exitCode = 2;
		return;
	}
	const baseURL = baseArg.replace(/\/+$/, "");
	const scale = Number.parseFloat(process.env.CERO_POLL_SCALE ?? "1");
	const pollScale = Number.isFinite(scale) && scale >= 0 ? scale : 1;
	const scope = process.env.CERO_DEVICE_SCOPE;

	const authClient = createAuthClient({
		baseURL,
		plugins: [deviceAuthorizationClient()],
	});

	// 1. Device authorization request: POST /api/auth/device/code (JSON body).
	let codeRes;
	try {
		codeRes = await authClient.device.code({
			client_id: clientId,
			...(scope ? { scope } : {}),
		});
	} catch (err) {
		fail("code", err);
		return;
	}
	if (codeRes.error || !codeRes.data) {
		fail("code", codeRes.error ?? { error: "empty_response" });
		return;
	}
	const code = codeRes.data;
	emit({
		event: "code",
		user_code: code.user_code,
		verification_uri: code.verification_uri,
		verification_uri_complete: code.verification_uri_complete,
		interval: code.interval,
		expires_in: code.expires_in,
	});

	// 2. Poll POST /api/auth/device/token until a token or a terminal error.
	let interval = Number(code.interval) > 0 ? Number(code.interval) : 5; // RFC 8628 §3.2 default
	const timeoutSec = Number(process.env.CERO_FLOW_TIMEOUT ?? code.expires_in ?? 1800);
	const deadline = Date.now() + timeoutSec * 1000;
	let token;
	for (;;) {
		await sleep(interval * 1000 * pollScale);
		if (Date.now() > deadline) {
			fail("token", { error: "timeout", error_description: "gave up waiting for approval" });
			return;
		}
		let res;
		try {
			res = await authClient.device.token({
				grant_type: GRANT_TYPE,
				device_code: code.device_code,
				client_id: clientId,
			});
		} catch (err) {
			fail("token", err);
			return;
		}
		if (res.data && res.data.access_token) {
			token = res.data;
			break;
		}
		const error = res.error ?? { error: "empty_response" };
		if (error.error === "authorization_pending") {
			emit({ event: "pending" });
			continue;
		}
		if (error.error === "slow_down") {
			interval += 5; // RFC 8628 §3.5: for this and all later requests
			emit({ event: "slow_down", interval });
			continue;
		}
		// access_denied, expired_token, invalid_grant, invalid_request, ... are terminal.
		fail("token", error);
		return;
	}

	// 3. Use the token: plain fetch to a Cero API route, and the client's getSession.
	const bearer = { Authorization: `Bearer ${token.access_token}` };
	let whoamiStatus = null;
	let whoami = null;
	try {
		const r = await fetch(`${baseURL}/api/user/whoami`, { headers: bearer });
		whoamiStatus = r.status;
		const text = await r.text();
		try {
			whoami = JSON.parse(text);
		} catch {
			whoami = text;
		}
	} catch (err) {
		fail("whoami", err);
		return;
	}
	let session;
	try {
		const s = await authClient.getSession({ fetchOptions: { headers: bearer } });
		if (s.error) {
			fail("session", s.error);
			return;
		}
		session = s.data;
	} catch (err) {
		fail("session", err);
		return;
	}
	emit({
		event: "token",
		access_token: token.access_token,
		token_type: token.token_type,
		expires_in: token.expires_in,
		scope: token.scope,
		whoami_status: whoamiStatus,
		whoami,
		session,
	});
	if (whoamiStatus !== 200 || !session) {
		fail("verify", {
			error: "token_not_accepted",
			error_description: `whoami status ${whoamiStatus}, session ${session ? "present" : "null"}`,
			status: whoamiStatus,
		});
	}
}

main().catch((err) => fail("internal", err));
