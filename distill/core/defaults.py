"""Defaults read by more than one layer (the recipe's config and the maths below it), kept in one place."""

CHUNK_SIZE = 256
"""Positions per chunk of the KD + CE loss (`kd.chunk_size`). 256 x 50,257 float32 is 51 MB per buffer: small next
to one [N, V] tensor at N >= 2048, and large enough that each chunk's matmul still runs near full speed. Raise it
on a GPU with memory to spare."""
