"""Who decides: the policy (data), the approval gate (the toolsets' confirm hook), and what a
person judges: the annotated screenshot and the comparison that binds an approval to it."""
