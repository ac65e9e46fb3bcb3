"""Child-side containment layers. `contain.py` applies them in order."""
