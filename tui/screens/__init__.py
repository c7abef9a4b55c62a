"""Screens: setup (choose the matrix), live (watch it run or replay it), help."""
