"""``evaluate`` and ``caption`` end to end, the evaluation pieces and the plots."""
