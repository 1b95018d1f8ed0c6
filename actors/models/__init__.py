"""Model providers behind one small protocol (``base.py``) and the catalog."""
