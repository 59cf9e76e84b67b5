"""fairdistill: knowledge distillation of causal LMs with counterfactual role reversal."""

__version__ = "0.1.0"
