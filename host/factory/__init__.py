"""The model factory: train, compress, export, evaluate and report on CIFAR classifiers (needs torch)."""
