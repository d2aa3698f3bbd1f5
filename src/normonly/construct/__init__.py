"""Constructions: set the normalization parameters of a frozen random net to a target.

One module per theorem: :mod:`normonly.construct.wide` (Theorem 1, also sparse weights,
Theorem 3) and :mod:`normonly.construct.residual` (Theorem 2, width traded for depth);
:mod:`normonly.construct.cnn` carries Theorem 1 over to convolutional targets channel by channel;
:mod:`normonly.construct.record` holds the per-layer record of each solve. The entry point that
validates arguments and certifies the result is :func:`normonly.reconstruct`
(:mod:`normonly.api`).
"""
