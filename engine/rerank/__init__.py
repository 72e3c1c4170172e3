"""The LightGBM LambdaRank re-ranker: candidate features, graded labels, query groups."""
