# An optional monthly budget on this project, alerting at 75 %, 90 % and 100 % of actual spend and
# at 100 % of the forecast. Off unless billing_account is set: creating a budget needs the
# Billing Account Costs Manager (or Administrator) role on the billing account, which the person
# applying may not have. With user credentials the Budget API also needs a quota project:
# `gcloud auth application-default set-quota-project $PROJECT` (docs/deploy.md, step 1).
resource "google_billing_budget" "project" {
  count           = var.billing_account != "" ? 1 : 0
  billing_account = var.billing_account
  display_name    = "${var.name} pipeline (${var.project_id})"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      units = tostring(var.budget_amount)
    }
  }

  threshold_rules {
    threshold_percent = 0.75
  }
  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }

  all_updates_rule {
    monitoring_notification_channels = var.notification_channels
    # Billing admins still get the e-mail unless channels take over.
    disable_default_iam_recipients = length(var.notification_channels) > 0
  }

  depends_on = [google_project_service.api]
}
