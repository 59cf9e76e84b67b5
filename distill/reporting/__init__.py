"""What a run shows: the model card, side-by-side reports and figures, and the evaluation of a checkpoint or a
run that writes them."""
