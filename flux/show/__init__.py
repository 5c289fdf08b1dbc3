"""The maths for people: LaTeX and text printers, the layout of derivations, notebook hooks."""
