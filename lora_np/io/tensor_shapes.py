"""One check shared by the checkpoint loaders: a file's tensors against the names and shapes its config implies."""


def check_tensor_shapes(expected, stored, path, tolerated=()):
    """Every tensor in ``expected`` ({name: shape}, a family spec's ``tensor_shapes``) must be in
    ``stored`` ({name: array or StoredTensor}) with that shape, and nothing else but ``tolerated``
    names: one ValueError naming the file and the first few of each kind of mismatch."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected) - set(tolerated))
    wrong = [f"{n} {tuple(stored[n].shape)} (config implies {s})" for n, s in expected.items()
             if n in stored and tuple(stored[n].shape) != tuple(s)]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: config.json disagrees with the weights: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {wrong[:4]}")
