"""MLflow models-from-code entry for a trained zoo model (see `logged_models`): MLflow runs this file
to build the model, which then reads its weights-only state dict; nothing pickled is stored or loaded.

`predict` takes float images in [0, 1], shape (N, C, H, W), and returns the model's probabilities:
(N,) for binary tasks, (N, outputs) otherwise."""
import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class TrainedClassifier(PythonModel):
    def load_context(self, context) -> None:
        from lightning_modules.model import build_classifier
        from lightning_modules.pretrained import load_state_dict_file

        config = context.model_config
        self.task = config["task"]
        self.model = build_classifier(config["arch"], "random", self.task, int(config["num_outputs"]),
                                      int(config["channels"]))
        self.model.load_state_dict(load_state_dict_file(context.artifacts["state_dict"]))
        self.model.eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from lightning_modules.tasks import scores

        with torch.inference_mode():
            images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            return scores(self.task, self.model(images)).numpy()


mlflow.models.set_model(TrainedClassifier())
