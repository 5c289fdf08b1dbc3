"""Reverse mode over matrix expressions: the VJP rule table, the backward sweep, the recurrence split."""
