"""Stand-in for ``comfy.model_patcher``: a ``ModelPatcher`` as far as the nodes look (``model``,
``model_options``, ``clone``, ``set_additional_models``; loading is ComfyUI's business)."""


class ModelPatcher:
    def __init__(self, model):
        self.model = model
        self.model_options = {"transformer_options": {}}
        self.additional_models = {}

    def clone(self):
        n = ModelPatcher(self.model)
        n.model_options = {**self.model_options}
        n.additional_models = dict(self.additional_models)
        return n

    def set_additional_models(self, key, models):
        self.additional_models[key] = models

    def get_model_object(self, name):
        return getattr(self.model, name)
