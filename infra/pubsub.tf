resource "google_pubsub_topic" "jobs" {
  # checkov:skip=CKV_GCP_83: messages carry a job id and an attempt count, never job content, and
  # Google encrypts them at rest; a customer-managed key is a deployment's choice, not a default.
  name                       = "${var.name}-jobs"
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic" "results" {
  # checkov:skip=CKV_GCP_83: messages carry a job id and an attempt count, never job content, and
  # Google encrypts them at rest; a customer-managed key is a deployment's choice, not a default.
  name = "${var.name}-results"
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: messages carry a job id and an attempt count, never job content, and
  # Google encrypts them at rest; a customer-managed key is a deployment's choice, not a default.
  name                       = "${var.name}-dead-letter"
  message_retention_duration = "604800s"
}

# Our own push subscription rather than an Eventarc trigger: the subscription an Eventarc
# trigger creates is Google-managed and cannot have a dead-letter policy.
resource "google_pubsub_subscription" "process_push" {
  name  = "${var.name}-process"
  topic = google_pubsub_topic.jobs.id
  # No shorter than process's timeout: a running job's message must not be pushed again.
  ack_deadline_seconds       = var.ack_deadline_s
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.fn["process"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.fn["process"].service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = "" # never expires
  }
}

# The sweep pulls dead letters from here: a job that never ran is dispatched again
# ('delivery-failed'), and ends FAILED 'Undeliverable' only past DELIVERY_BUDGET_S.
resource "google_pubsub_subscription" "dead_letters" {
  name                       = "${var.name}-dead-letters"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}
