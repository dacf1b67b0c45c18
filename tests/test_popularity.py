import numpy as np
import scipy.sparse as sp

from recsys_ebm.models.popularity import Popularity
from tests.recommender_mixin import RecommenderTestMixin


class TestPopularity(RecommenderTestMixin):
    personalised = False

    def make_model(self):
        return Popularity()


def test_popularity_orders_by_count():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    model = Popularity().fit(train)
    items, en = model.recommend(sp.csr_matrix((1, 4), dtype=np.float32), n=4)
    assert items[0, 0] == 1 and set(items[0, 1:3]) == {0, 2} and items[0, 3] == 3
    np.testing.assert_allclose(en[0], -np.log1p([3, 1, 1, 0]), rtol=1e-6)
