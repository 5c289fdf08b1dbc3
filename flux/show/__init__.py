"""The maths for people: names, LaTeX and text printers, the layout of derivations, notebook hooks."""
