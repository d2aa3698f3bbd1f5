"""The networks as torch modules: layers, the wide NormNet, the residual one, the target MLP.

``layers`` (normalizations, frozen random weights) → ``base`` (what every norm-only network
shares) → ``wide`` / ``residual`` (the two architectures) → ``io`` (loading a saved network);
``target`` holds the ReLU MLP that a network reproduces; ``cnn_layers`` / ``cnn`` the ReLU CNN
target (read from an ``nn.Sequential``) and ``normcnn`` the frozen random CNN that reproduces it.
"""
