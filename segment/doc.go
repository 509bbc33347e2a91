// Package segment speaks Segment's wire protocols: it reads and decodes
// requests to the HTTP Tracking API (/v1/*, as Segment's client libraries send
// them) and deliveries from Segment's webhook destination, checks write keys
// and X-Signature, and translates each event into a mapping.Message.
//
// The core functions (ReadBody, DecodeTrackingAPI, DecodeWebhook,
// VerifySignature) take plain values so they can be tested without a server;
// Handler keeps echo.Context at the edge.
package segment

import "github.com/bridgeworks/bridge/mapping"

// Limits of the Tracking API (Segment's own) and of webhook deliveries.
const (
	// MaxEventBytes is the largest single call, and the largest event inside a batch, in bytes.
	MaxEventBytes = 32 << 10
	// MaxBatchBytes is the largest batch request body, in bytes, after decompression.
	MaxBatchBytes = 500 << 10
	// MaxBatchEvents is the most events a Tracking API batch may hold.
	MaxBatchEvents = 2500
	// MaxWebhookEvents is the most events one webhook delivery may hold (Segment batches up to 4,000).
	MaxWebhookEvents = 4000
	// DefaultMaxWebhookBytes is the default limit on a webhook delivery body, in bytes, after decompression.
	DefaultMaxWebhookBytes = 16 << 20
	// MaxDepth is the deepest JSON nesting accepted (objects and arrays, counted from the body's root).
	// Deeper bodies are refused before encoding/json sees them.
	MaxDepth = mapping.MaxJSONDepth
)
