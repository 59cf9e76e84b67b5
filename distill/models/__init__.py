"""Models: loading a teacher or student (hub, local folder, embedded GGUF), pruning, the attention kernel, and the
log-probability and sampling helpers every later stage runs a causal LM through."""
