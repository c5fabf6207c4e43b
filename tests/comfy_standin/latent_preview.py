"""Stand-in for ComfyUI's ``latent_preview``: the preview callback records what it is given."""

CALLS = []


def prepare_callback(model, steps, x0_output_dict=None):
    """``callback(step, x0, x, total_steps)``, as ComfyUI's samplers call it."""
    def callback(step, x0, x, total_steps):
        CALLS.append((step, tuple(x0.shape), tuple(x.shape), total_steps, steps))
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
    return callback
