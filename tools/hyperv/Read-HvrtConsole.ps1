<#
.SYNOPSIS
  Prints an hvrt VM's serial console (COM1 named pipe) until the VM turns off.
.EXAMPLE
  .\Read-HvrtConsole.ps1 -Name hvrt-hello | Tee-Object hello.log
#>
param([string]$Name = "hvrt")
$pipe = New-Object System.IO.Pipes.NamedPipeClientStream(".", "$Name-com1", [System.IO.Pipes.PipeDirection]::In)
$pipe.Connect(10000)
$reader = New-Object System.IO.StreamReader($pipe)
try {
    while (($line = $reader.ReadLine()) -ne $null) { Write-Output $line }
} finally {
    $reader.Dispose()
}
$vm = Get-VM -Name $Name
Write-Host "console closed; VM state: $($vm.State)"
