"""A Teacher whose processor expands images into other image tokens than the Student's cannot give visual-token or
relation KD: the stage refuses it while loading its data, before the first step, as one user error."""

import pytest

from llava_ckd.data.samples import Sample
from llava_ckd.distill.terms import loss_terms
from llava_ckd.files import DataError
from llava_ckd.train.teacher_side import refuse_other_image_tokens


def sample(record: int, image_tokens: list[int]) -> Sample:
    return Sample(f"s{record}", [1, 2], [-100, 2], [], image_tokens=image_tokens, record=record)


STUDENT = [sample(0, [16]), sample(1, [16, 16])]
TEACHER = [sample(0, [16]), sample(1, [4, 4])]


@pytest.mark.parametrize("losses", [loss_terms(dict(visual_kd=1.0)), loss_terms(dict(relation_kd=0.5))])
def test_visual_or_relation_kd_across_other_image_tokens_is_refused_naming_the_sample(losses):
    with pytest.raises(DataError, match=r"sample s1: .*Student \[16, 16\], Teacher \[4, 4\]. Set visual_kd and "
                                        r"relation_kd to 0"):
        refuse_other_image_tokens(STUDENT, TEACHER, losses)


def test_response_kd_alone_and_equal_image_tokens_pass():
    refuse_other_image_tokens(STUDENT, TEACHER, loss_terms(dict(response_kd=1.0)))
    refuse_other_image_tokens(STUDENT, STUDENT, loss_terms(dict(visual_kd=1.0, relation_kd=1.0)))
