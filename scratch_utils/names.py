"""The names the CLI offers and the builders accept, in one place (light to import: the CLI
reads them without loading TensorFlow)."""

MODEL_NAMES = ("encoder_decoder", "unet", "vgg16_unet")
LOSS_NAMES = ("bce", "dice", "bce_dice", "focal", "tversky")
ENCODER_WEIGHTS = ("imagenet", "hed", "none")
SPLITS = ("train", "val", "test")
REGION_MEASURES = ("length", "area")   # how the region rule measures a region (scratch_utils.decision)
DECISION_RULES = ("head", "regions")     # how a part is called (scratch_utils.decision)
