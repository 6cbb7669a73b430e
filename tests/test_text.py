import pytest
import torch
from transformers import CLIPTokenizer

from cdvideo.errors import CdvideoError
from cdvideo.models import architectures as tiny
from cdvideo.models.text import (
    add_tokens,
    encode_distinct,
    encode_prompts,
    eos_features,
    eos_index,
    official_index,
    splice_token_rows,
    tokenize,
    unsplice,
)


@pytest.fixture(scope="module")
def tokenizer():
    tok = CLIPTokenizer.from_pretrained(str(tiny.tokenizer_dir()))
    return tok


def test_bundled_tokenizer_is_sd15(tokenizer):
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert tokenizer.model_max_length == 77 and len(tokenizer) == 49408


def test_eos_index_is_true_eos_not_added_token():
    c = tiny.build_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    add_tokens(tok, te, ["sks"], ["dog"])
    ids = tokenize(tok, ["a photo of a sks dog"])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 49408, 1929, 49407]
    assert eos_index(ids, tok.eos_token_id).item() == 7
    assert official_index(ids).item() == 5  # argmax(id) lands on the added token

    with torch.no_grad():
        out = te(ids)
        feat = eos_features(te, tok, ["a photo of a sks dog"], "eos")
        official = eos_features(te, tok, ["a photo of a sks dog"], "official")
    # the features come from the prompt encoded only up to its EOS (CLIP is causal): the same as all 77 positions
    assert torch.allclose(feat[0], out.last_hidden_state[0, 7], atol=1e-5)
    assert torch.allclose(official[0], out.last_hidden_state[0, 5], atol=1e-5)
    # transformers pools the same wrong place because SD1.5's config says eos_token_id=2
    assert torch.allclose(out.pooler_output[0], official[0], atol=1e-5)
    assert not torch.equal(feat[0], official[0])


def test_new_token_row_starts_at_class_embedding():
    c = tiny.build_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    [tid] = add_tokens(tok, te, ["<new1>"], ["dog"])
    w = te.get_input_embeddings().weight
    assert tid == 49408 and torch.equal(w[tid], w[1929])


def test_token_collision_is_an_error():
    c = tiny.build_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    add_tokens(tok, te, ["sks"], ["dog"])
    with pytest.raises(CdvideoError, match="'sks' is already an added token"):
        add_tokens(tok, te, ["sks"], ["dog"])


def test_spliced_token_rows_train_alone_and_merge_back():
    c = tiny.build_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    ids = add_tokens(tok, te, ["sks"], ["dog"])
    before = eos_features(te, tok, ["a photo of a sks dog"]).detach()
    spliced = splice_token_rows(te, ids)
    assert torch.equal(eos_features(te, tok, ["a photo of a sks dog"]), before)  # same forward
    feats = eos_features(te, tok, ["a photo of a sks dog"])  # a plain sum of layer-normed features is constant
    (feats * torch.linspace(-1, 1, feats.numel()).view_as(feats)).sum().backward()
    assert spliced.rows.grad.abs().sum() > 0 and spliced.table.weight.grad is None  # only the row trains
    with torch.no_grad():
        spliced.rows += 0.5
    unsplice(te)
    assert type(te.get_input_embeddings()).__name__ == "Embedding"
    assert torch.equal(te.get_input_embeddings().weight[ids], spliced.rows.detach())


def test_repeated_prompts_are_encoded_once_with_the_same_values_and_gradients():
    c = tiny.build_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    spliced = splice_token_rows(te, add_tokens(tok, te, ["sks"], ["dog"]))
    prompts = ["a photo of a sks dog", "a photo of a dog", "a photo of a sks dog"]
    grads = []
    for encode in (encode_prompts, encode_distinct):
        cond = encode(te, tok, prompts)
        (cond * torch.linspace(0, 1, cond.numel()).view_as(cond)).sum().backward()
        grads.append((cond.detach(), spliced.rows.grad.clone()))
        spliced.rows.grad = None
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)  # summed in another order
