"""A factory model over several inputs is called by input name, whatever order the data has."""

from __future__ import annotations

import pytest
import torch

from components.errors import ModelError
from components.models import bind_inputs


class Difference(torch.nn.Module):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return input_ids - attention_mask


def test_inputs_in_another_order_than_forward_are_passed_by_name() -> None:
    ids, mask = torch.tensor([5.0]), torch.tensor([1.0])
    # a tokenizer's order: input_ids, token_type_ids would come before attention_mask
    bound = bind_inputs(Difference(), ["attention_mask", "input_ids"], "pkg:diff")
    assert bound(mask, ids).item() == 4.0
    same = bind_inputs(Difference(), ["input_ids", "attention_mask"], "pkg:diff")
    assert isinstance(same, Difference)  # already in order: left as it is


def test_arrays_forward_does_not_take_are_left_out() -> None:
    bound = bind_inputs(Difference(), ["input_ids", "token_type_ids", "attention_mask"], "pkg:d")
    assert bound(torch.tensor([5.0]), torch.tensor([0.0]), torch.tensor([1.0])).item() == 4.0


def test_a_parameter_forward_needs_and_the_data_lacks_is_named() -> None:
    with pytest.raises(ModelError, match=r"pkg:diff's forward needs \['attention_mask'\], which "
                                         r"the data's inputs \['input_ids', 'token_type_ids'\] do "
                                         r"not have"):  # fmt: skip
        bind_inputs(Difference(), ["input_ids", "token_type_ids"], "pkg:diff")
