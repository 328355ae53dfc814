"""Distillation methods: model compression (ch. 2), compact predictive distributions (ch. 3), tractable generative models (ch. 4)."""
