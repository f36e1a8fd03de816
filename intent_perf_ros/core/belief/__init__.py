"""Belief over where each human is heading (goal intents) and Bayesian selection of robot behaviours."""
