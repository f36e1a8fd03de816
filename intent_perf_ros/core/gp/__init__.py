"""Gaussian-process trajectory prediction: exact, online, sparse GPs, features, predictor, store."""
