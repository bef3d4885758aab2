"""`musicvae serve`: a local web page and JSON API over one trained model."""
