"""The setgid helper postdrop (C source postdrop.c) and its build step (build.py)."""
