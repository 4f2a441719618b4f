"""HemoPlatform machine learning library: data, preprocessing, model, training and inference.

Plain Python + PyTorch; never imports Django. See docs/INTERFACES.md for the contract the web apps use.
"""
