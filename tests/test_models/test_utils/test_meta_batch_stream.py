"""MetaBatchStream: an endless stream over a real dataloader config that resumes at the same batch."""
import pytest
from mmengine.registry import init_default_scope

import calibseg  # noqa: F401  (registers HeldOutSplit)
from calibseg.models.utils import MetaBatchStream


def _meta_loader(root: str, held_out: int, batch_size: int) -> dict:
    voc = dict(type='PascalVOCDataset', data_root=root, data_prefix=dict(img_path='JPEGImages',
               seg_map_path='SegmentationClassAug'), ann_file='ImageSets/Segmentation/aug.txt',
               pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')])
    return dict(batch_size=batch_size, num_workers=0,
                dataset=dict(type='HeldOutSplit', part='held_out', held_out=held_out, seed=0, dataset=voc))


def test_meta_batch_stream_resumes_at_the_same_batch(tiny_voc):
    init_default_scope('mmseg')
    cfg = _meta_loader(tiny_voc, held_out=5, batch_size=2)
    cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)

    def paths(batch):
        return [s.img_path for s in batch['data_samples']]

    stream = MetaBatchStream(cfg, seed=3)
    assert len(stream) == 3  # 5 held-out images, batches of 2
    drawn = [paths(stream.next()) for _ in range(7)]  # crosses two epoch boundaries
    assert sorted(sum(drawn[:3], [])) == sorted(sum(drawn[3:6], []))  # each epoch sees every image once
    assert drawn[:3] != drawn[3:6]  # in a new order
    resumed = MetaBatchStream(cfg, seed=3)
    resumed.restore(4)
    assert [paths(resumed.next()) for _ in range(3)] == drawn[4:7]


def test_restore_checks_its_position():
    stream = MetaBatchStream(dict(batch_size=1), seed=0)  # the loader is built on first use only
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='consumed must be an integer >= 0'):
            stream.restore(bad)
