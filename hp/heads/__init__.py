"""What sits on the front end: pooling back-ends over its hidden states and the task losses."""
