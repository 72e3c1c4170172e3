"""The LightGBM learning-to-rank re-ranker (XE-NDCG or LambdaRank): candidate features, graded
labels, query groups."""
