"""Fashion-MNIST's class names, in label order (Xiao, Rasul and Vollgraf, arXiv:1708.07747).

The dataset builder (IDX parsing, parquet shards) is repository tooling: ``tools/data/fashion_mnist.py``.
"""

FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
