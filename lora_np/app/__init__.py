"""The application on top of the library: training loop, evaluation, the demo and the command line."""
