"""The transfer set: local files, a hub dataset or the teacher's own samples, tokenized into training and
validation blocks."""
