"""Foundation models and the model hub."""
