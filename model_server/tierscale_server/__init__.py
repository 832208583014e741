"""tierscale model server: BERT recommender tiers, training and a TorchServe-style HTTP API."""
