//! The gRPC adapter: destructure, call the store, convert.

use std::sync::Arc;

use lextral_common::into_status;
use lextral_proto::v1::{
    retriever_service_server::RetrieverService, DeleteRequest, DeleteResponse, LabelCount,
    Neighbor, SearchRequest, SearchResponse, SearchResult, StatsRequest, StatsResponse,
    UpsertRequest, UpsertResponse,
};
use tonic::{Request, Response, Status};

use crate::store::{NewClause, SearchParams, Store};

/// Implements `lextral.v1.RetrieverService`.
pub struct RetrieverGrpc {
    store: Arc<Store>,
}

impl RetrieverGrpc {
    /// Serves `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl RetrieverService for RetrieverGrpc {
    #[tracing::instrument(skip_all, fields(records = request.get_ref().records.len()))]
    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let UpsertRequest { records } = request.into_inner();
        let records = records
            .into_iter()
            .map(|r| NewClause {
                text: r.text,
                label: r.label,
                split: r.split,
                embedding: r.embedding,
            })
            .collect();
        let outcome = self.store.upsert(records).await.map_err(into_status)?;
        Ok(Response::new(UpsertResponse {
            inserted: outcome.inserted,
            updated: outcome.updated,
            unchanged: outcome.unchanged,
            ids: outcome.ids.iter().map(i64::to_string).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(queries = request.get_ref().queries.len(), k = request.get_ref().k))]
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let SearchRequest {
            queries,
            k,
            min_similarity,
            splits,
            labels,
            ef_search,
        } = request.into_inner();
        let queries: Vec<Vec<f32>> = queries.into_iter().map(|q| q.values).collect();
        let params = SearchParams {
            k,
            min_similarity,
            splits,
            labels,
            ef_search,
        };
        let results = self
            .store
            .search(queries, &params)
            .await
            .map_err(into_status)?;
        Ok(Response::new(SearchResponse {
            results: results
                .into_iter()
                .map(|hits| SearchResult {
                    neighbors: hits
                        .into_iter()
                        .map(|hit| Neighbor {
                            id: hit.id.to_string(),
                            label: hit.label,
                            text: hit.text,
                            similarity: hit.similarity,
                            split: hit.split,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let DeleteRequest { ids, splits } = request.into_inner();
        let deleted = self
            .store
            .delete(&ids, &splits)
            .await
            .map_err(into_status)?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn stats(
        &self,
        _request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let stats = self.store.stats().await.map_err(into_status)?;
        Ok(Response::new(StatsResponse {
            total: stats.total,
            dimension: self.store.dimension() as u32,
            labels: stats
                .counts
                .into_iter()
                .map(|(label, split, count)| LabelCount {
                    label,
                    split,
                    count,
                })
                .collect(),
        }))
    }
}
