"""The teacher's side of a step: `targets(batch)` from the live teacher or its cache."""
