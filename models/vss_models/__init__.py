"""Builders, trainers and evaluators of the models VSS Serving ships."""
