"""Real photographs shipped with scikit-image, square and non-square: the images every suite
(tests/ on the llava host, tests_hf/ on the hf host) runs on."""
from PIL import Image


def photos():
    from skimage import data

    return {
        "astronaut": Image.fromarray(data.astronaut()),        # 512x512
        "chelsea": Image.fromarray(data.chelsea()),            # 451x300 (cat)
        "coffee": Image.fromarray(data.coffee()),              # 600x400
        "rocket": Image.fromarray(data.rocket()),              # 427x640
    }
