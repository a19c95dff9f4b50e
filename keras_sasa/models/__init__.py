"""Model builders: the SASA-ResNets of Ramachandran et al. 2019, the conversion of any Keras
CNN into an attention model (`to_attention`), and their FLOP count."""

from keras_sasa.models.convert import to_attention
from keras_sasa.models.flops import count_flops
from keras_sasa.models.resnet import SASAResNet
from keras_sasa.models.resnet import SASAResNet26
from keras_sasa.models.resnet import SASAResNet38
from keras_sasa.models.resnet import SASAResNet50
from keras_sasa.models.resnet import SASAResNet101
from keras_sasa.models.resnet import SASAResNet152
from keras_sasa.models.resnet import STEMS
from keras_sasa.models.resnet import min_input_size
from keras_sasa.models.resnet import stem_heads
from keras_sasa.models.resnet import stem_reduction

# Used by the command line: model name -> builder.
MODELS = {
    "sasa_resnet26": SASAResNet26,
    "sasa_resnet38": SASAResNet38,
    "sasa_resnet50": SASAResNet50,
    "sasa_resnet101": SASAResNet101,
    "sasa_resnet152": SASAResNet152,
}

__all__ = [
    "MODELS",
    "SASAResNet",
    "SASAResNet26",
    "SASAResNet38",
    "SASAResNet50",
    "SASAResNet101",
    "SASAResNet152",
    "STEMS",
    "count_flops",
    "min_input_size",
    "stem_heads",
    "stem_reduction",
    "to_attention",
]
