"""What ships: ONNX export and its bundle, and the command line that runs a bundle."""
