"""What drives a neuron: targets, gradient and occlusion maps, upsampled activation maps."""
