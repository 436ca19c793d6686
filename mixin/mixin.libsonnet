// gsd's monitoring mixin: the alerts and the dashboard of the Helm chart,
// read from the chart's own files (charts/gsd/rules/gsd.rules.yaml and
// charts/gsd/dashboards/*.json), so that a kube-prometheus user and a Helm
// user get the same rules and the same panels. tests/mixin.rs renders it
// and compares it with `helm template`.
//
//   local gsd = (import 'gsd/mixin/mixin.libsonnet') + {
//     _config+:: { runbookBaseUrl: 'https://wiki.example/gsd-runbook' },
//   };
//   gsd.prometheusAlerts      // {groups: [...]}: alerting rules
//   gsd.prometheusRules       // {groups: [...]}: recording rules (none yet)
//   gsd.grafanaDashboards     // {'gsd-drains.json': {...}}
{
  _config+:: {
    // Each alert's runbook_url is this plus `#<alert name in lower case>`:
    // the chart's monitoring.prometheusRule.runbookBaseUrl.
    runbookBaseUrl: 'https://github.com/gsd-project/gsd/blob/main/docs/runbook.md',
  },

  // The runbook links as the rules file writes them, and where they go.
  local shipped = 'https://github.com/gsd-project/gsd/blob/main/docs/runbook.md#',
  local base =
    local url = $._config.runbookBaseUrl;
    (if std.endsWith(url, '/') then std.substr(url, 0, std.length(url) - 1) else url) + '#',
  local moved(rule) =
    if std.objectHas(rule, 'annotations') && std.objectHas(rule.annotations, 'runbook_url')
       && std.startsWith(rule.annotations.runbook_url, shipped)
    then rule { annotations+: { runbook_url: base + std.substr(rule.annotations.runbook_url, std.length(shipped), 1000) } }
    else rule,

  local file = std.parseYaml(importstr '../charts/gsd/rules/gsd.rules.yaml'),
  // The file's groups, each kept with the rules of one kind (a group with
  // none of them left out).
  local groupsOf(kind) = [
    group { rules: [moved(rule) for rule in group.rules if std.objectHas(rule, kind)] }
    for group in file.groups
    if std.length([rule for rule in group.rules if std.objectHas(rule, kind)]) > 0
  ],

  prometheusAlerts+:: { groups+: groupsOf('alert') },
  prometheusRules+:: { groups+: groupsOf('record') },

  grafanaDashboards+:: {
    'gsd-drains.json': import '../charts/gsd/dashboards/gsd-drains.json',
  },
}
