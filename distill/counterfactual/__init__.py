"""Counterfactual role reversal: gendered word lists, text swaps, token-level twins and their alignment, the
teacher's her/his decisions, and the teacher-probability modification across a block and its twin."""
