"""The embedded local stack: real servers, every function, and KafkaSource dispatchers."""
