"""Tuning: ``make tune``, a search of train's params by cross-validation on the training rows.

It stands beside the review and monitoring parts: it fits models with the train stage's code and
hands its result back as a change of params.yaml, which a pull request's gate then judges on the
test rows that the search never saw.
"""
