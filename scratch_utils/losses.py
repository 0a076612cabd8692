"""Losses for a class that covers 1% of the pixels (notebook 03).

BCE, Dice and focal/Tversky are Keras built-ins; BCE + Dice is their sum. Dice is
computed over the whole batch (Keras' default ``axis=None``), not per image: a per-image
Dice of a good part (empty mask) is 1 whatever the model predicts, so false alarms on
good parts would cost nothing.
"""
from __future__ import annotations

import keras
from keras import ops

from .names import LOSS_NAMES


@keras.saving.register_keras_serializable(package="scratch_utils")
class BCEDice(keras.losses.Loss):
    """``bce_weight * BCE + dice_weight * Dice``: BCE gives every pixel a gradient from
    the first step, Dice keeps the rare defect pixels from being drowned out."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, name: str = "bce_dice",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce_weight, self.dice_weight = bce_weight, dice_weight

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
        dice = keras.losses.dice(y_true, y_pred)
        return self.bce_weight * bce + self.dice_weight * dice

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight,
                "dice_weight": self.dice_weight}


def get_loss(name: str) -> keras.losses.Loss:
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice":
        return keras.losses.Dice(name="dice")
    if name == "bce_dice":
        return BCEDice()
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0, name="focal")
    if name == "tversky":
        # beta > alpha weighs missed defect pixels above false alarms.
        return keras.losses.Tversky(alpha=0.3, beta=0.7, name="tversky")
    raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSS_NAMES)}")
