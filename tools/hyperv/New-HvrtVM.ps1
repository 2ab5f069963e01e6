<#
.SYNOPSIS
  Creates (or re-creates) a Generation 2 Hyper-V VM that boots an hvrt VHDX, with the serial console
  on a named pipe, and starts it.

.DESCRIPTION
  Run on the Hyper-V host, in an elevated PowerShell, after copying build/<app>/<app>.vhdx there
  (`make vhdx APP=<app>` builds it). Secure Boot is turned off: the image is an unsigned UEFI
  application. COM1 exists on Gen2 only when Set-VMComPort gives it a pipe; the kernel probes it and
  falls back to the framebuffer console (what Hyper-V Manager's window shows) when it is absent.

.EXAMPLE
  .\New-HvrtVM.ps1 -Vhdx C:\vms\hello.vhdx -Name hvrt-hello -Cpus 2 -MemoryMB 512
  # then, to read the serial console:
  .\Read-HvrtConsole.ps1 -Name hvrt-hello
#>
param(
    [Parameter(Mandatory = $true)][string]$Vhdx,
    [string]$Name = "hvrt",
    [int]$Cpus = 2,
    [int]$MemoryMB = 512,
    [string]$Switch = ""
)
$ErrorActionPreference = "Stop"

if (Get-VM -Name $Name -ErrorAction SilentlyContinue) {
    Stop-VM -Name $Name -TurnOff -Force -ErrorAction SilentlyContinue
    Remove-VM -Name $Name -Force
}
$vm = New-VM -Name $Name -Generation 2 -MemoryStartupBytes ($MemoryMB * 1MB) -VHDPath $Vhdx
Set-VMProcessor -VMName $Name -Count $Cpus
Set-VMMemory -VMName $Name -DynamicMemoryEnabled $false
Set-VMFirmware -VMName $Name -EnableSecureBoot Off
Set-VMComPort -VMName $Name -Number 1 -Path "\\.\pipe\$Name-com1"
if ($Switch) { Connect-VMNetworkAdapter -VMName $Name -SwitchName $Switch }
# Checkpoints and automatic restarts get in the way of a one-shot appliance.
Set-VM -Name $Name -CheckpointType Disabled -AutomaticStartAction Nothing -AutomaticStopAction TurnOff
Start-VM -Name $Name
Write-Host "started $Name; serial console on \\.\pipe\$Name-com1 (Read-HvrtConsole.ps1 -Name $Name)"
